"""Link drivers, chosen by ``driver.type`` in the config.

Each driver module defines a config model (with a ``type`` literal, the ``protocol`` its
counts follow, ``estimation_params()`` and ``build(window_s)``) and the driver it builds.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config

DRIVER_CONFIGS = (SimulatedBB84Config,)

DriverConfig = Annotated[Union[DRIVER_CONFIGS], Field(discriminator="type")]
