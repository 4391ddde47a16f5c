"""The model registry: model families, uploaded versions, compression jobs and the signed, encrypted packages."""
