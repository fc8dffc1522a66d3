"""Offline benchmark: class catalog, builder, manifests and the mix-and-separate sampler."""
