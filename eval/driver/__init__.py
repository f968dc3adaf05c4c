"""The heareval driver: runs heareval's runners over task folders and collects scores."""
