"""Examples that run from the repository root, e.g. ``pixelplan train --env examples.slider:make_env``."""
