"""The stand-in for MedImageParse — NOT A MODEL: classical thresholding behind the real endpoint contract.

Everything else in mip-gateway (client, pipeline, demo, tests) runs against this package; only the
model itself is replaced. ``service.mock_endpoint`` is the entry point others import.
"""

from service.mock.app import NOTICE, create_app
from service.mock.categories import category_for
from service.mock.faults import FaultCounters, FaultPlan, FaultSpecError
from service.mock.server import MockEndpointServer
from service.mock.thresholds import prompt_quantile

__all__ = [
    "NOTICE",
    "FaultCounters",
    "FaultPlan",
    "FaultSpecError",
    "MockEndpointServer",
    "category_for",
    "create_app",
    "prompt_quantile",
]
