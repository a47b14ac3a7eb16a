"""Teacher models for pseudo-labelling (run out of process, in their own virtualenvs)."""
