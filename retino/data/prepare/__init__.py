"""Offline preparation: a photograph source (Kaggle's folders, the public sets, the demo
generator) read, checked (quality, the data audit) and written once as a cache in the lab's
layout. No torch here, so that the preparation's worker processes start fast.

    python -m retino.data.prepare SOURCE OUT (cache.py)"""
