"""Offline benchmark: class catalog, builder, manifests and the mix-and-separate sampler.

Two modules stay over the ~400 lines of the layout rule, whole and untouched on purpose:
``build.py`` (about 490 lines) and ``image_sources.py`` (about 500). Their source bytes are part of
the build keys (``build.AUDIO_CODE`` in :func:`build.audio_hash`, and :func:`build.images_hash`), so
any edit, even to a docstring, makes every existing benchmark build stale and rebuilds it. They
also read as one story each: ``build.py`` is the build from plan to manifests with its reuse,
repair and locking rules, ``image_sources.py`` the four image materials from locating to rendering
to the held-out style rule. Split them together with the next deliberate change of the builder.
"""
