"""How the log becomes threads: the recorder and the projection it applies."""
