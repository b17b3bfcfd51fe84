"""Pair models: blocks, encoder, decoders, the pair model, presets (``registry``) and a reference step."""
