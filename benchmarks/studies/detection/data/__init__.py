"""Detection data: generated scenes and shapes (embedded, never downloaded) and real data YAMLs."""
