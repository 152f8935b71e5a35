"""Renamed `retina.image_files` (`retina.io` read like the standard library's `io`). This old import
path stays an alias of that very module, so code (and monkeypatching) written against it keeps working."""

import sys

from . import image_files

sys.modules[__name__] = image_files
