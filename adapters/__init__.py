"""adapters: a torch-API shim over MindSpore.

``adapters.torch`` mirrors the layout of ``torch``; its modules are MindSpore Cells and
its functions call the MindSpore kernel that serves each op on the current device.
"""
