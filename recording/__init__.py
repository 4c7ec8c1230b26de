"""Recording: an output of a feed that writes its camera's frames to Matroska segment files."""
