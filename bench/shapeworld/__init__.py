"""The shape world's tools: train the ``tiny-shapes`` model and its rewards (``train``), check them (``check``).

The world itself (vocabulary, captions, renderer) is ``bench.core.shapes``; the model builder is
``bench.core.families.sd.load_tiny_shapes``; the rewards are ``rewards.shapeworld``.
"""
