"""Renamed `retina.image_files` (`retina.io` read like the standard library's `io`); this module keeps
the old import path."""

from .image_files import (IMAGE_SUFFIXES, image_stem, images_by_stem, read_image, write_bytes_atomic,  # noqa: F401
                          write_image)
