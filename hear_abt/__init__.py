"""hear-abt: Audio Barlow Twins for the HEAR 2021 benchmark."""
