"""The MindSpore-native trainer. Importing it configures MindSpore's host pipeline for the
device (``host_pipeline``): do so before running any MindSpore op."""
import mindspore as _mindspore

from .host_pipeline import configure as _configure_host_pipeline

_configure_host_pipeline(_mindspore.get_context("device_target"))
