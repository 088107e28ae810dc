"""Pure DICOM and image code for mip-gateway: datasets, arrays and paths in; values out.

Nothing here imports a queue, an HTTP stack, a database or the settings.
"""
