"""The Mesa user population and the Gymnasium environment (planned)."""
