"""The base layer: devices, checks, query rows, exact attention rows, pooling, segmentations,
the Doc and what makes one (encoding a text, synthetic vectors, sample texts), and the
streamed statistics pass. Imports nothing else of explorer."""
