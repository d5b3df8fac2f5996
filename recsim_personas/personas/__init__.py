"""Persona distillation (Ms/Ml), trait statistics, embeddings, clustering and the memory index."""
