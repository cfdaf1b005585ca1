"""Link drivers, chosen by ``driver.type`` in the config.

Each driver module defines a config model (a ``FleetConfig`` or an ``IODriverConfig``, see
``qtelemetry.drivers.base``: a ``type`` literal, the ``protocol`` its counts follow) and the
driver it builds.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from qtelemetry.drivers.etsi014 import Etsi014Config
from qtelemetry.drivers.etsi015 import Etsi015Config
from qtelemetry.drivers.replay import ReplayConfig
from qtelemetry.drivers.sequence import SequenceConfig
from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config
from qtelemetry.drivers.simulated_heralded import SimulatedHeraldedConfig
from qtelemetry.drivers.simulated_spdc import SimulatedSPDCConfig

DRIVER_CONFIGS = (SimulatedBB84Config, SimulatedSPDCConfig, SimulatedHeraldedConfig, Etsi014Config, Etsi015Config,
                  SequenceConfig, ReplayConfig)

DriverConfig = Annotated[Union[DRIVER_CONFIGS], Field(discriminator="type")]
