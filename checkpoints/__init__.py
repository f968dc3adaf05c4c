"""The bundled default checkpoint lives here (default.pt) with its model card."""
