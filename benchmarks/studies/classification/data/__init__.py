"""Classification data: the embedded digits and local image folders (never downloaded)."""
