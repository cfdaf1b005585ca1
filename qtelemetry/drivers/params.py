"""The values a protocol's estimator parameters may take: those a simulated link of the protocol accepts.

Whatever gives the estimator its parameters (a replayed recording's rows, a link's event-file
config) is held to the simulated link's own fields (bounds, descriptions) and rules (ν < μ), so
that nothing the exporter accepts can make a key rate of 3,085 dB loss or ``-0`` bits: there is
one domain per protocol, not a copy per source.
"""

from __future__ import annotations

import copy
from functools import cache, lru_cache
from typing import Any, get_args

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError, create_model
from pydantic_core import PydanticUndefined

from qtelemetry.drivers.base import FieldError, StrictModel, check
from qtelemetry.drivers.simulated import SimulatedConfig
from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config
from qtelemetry.drivers.simulated_spdc import SimulatedSPDCConfig
from qtelemetry.estimation import PROTOCOLS


class DecoyParams(StrictModel):
    """Decoy BB84's rule between its parameters: the decoy bounds divide by μ − ν."""

    mu: float
    nu: float

    @check
    def _decoy_below_signal(self) -> "DecoyParams":
        if self.nu >= self.mu:
            raise FieldError("nu", f"must be smaller than mu ({self.mu:g})")
        return self


#: Per protocol with estimator parameters: the simulated link whose fields bound them, and the rules between them.
DOMAINS: dict[str, tuple[type[SimulatedConfig], type[StrictModel]]] = {
    SimulatedBB84Config.protocol: (SimulatedBB84Config, DecoyParams),
    SimulatedSPDCConfig.protocol: (SimulatedSPDCConfig, StrictModel),
}


@cache
def params_model(protocol: str, required: tuple[str, ...] = (), base: type[StrictModel] = StrictModel) -> type[StrictModel]:
    """A model of ``protocol``'s estimator parameters with the simulated link's fields (on ``base``);
    those in ``required`` lose their default."""
    simulated, rules = DOMAINS[protocol]

    def field(name: str) -> tuple[Any, Any]:
        info = simulated.model_fields[name]
        if name in required:
            info = copy.copy(info)
            info.default = PydanticUndefined
        return info.annotation, info

    bases = (rules,) if issubclass(rules, base) else (base, rules)
    return create_model(f"{simulated.__name__}EstimationParams", __base__=bases,  # type: ignore[call-overload]
                        **{name: field(name) for name in PROTOCOLS[protocol].param_names})


def param_problems(protocol: str, values: NDArray[np.float64]) -> tuple[list[tuple[str, str] | None], NDArray[np.intp]]:
    """What is wrong with rows of ``values`` (rows, parameters in ``param_names`` order, finite),
    as the simulated link's config would say it: per distinct row None or (parameter, problem),
    and the distinct row of each row. Each distinct row is validated once (a recording's rows
    mostly repeat one link's parameters)."""
    if protocol not in DOMAINS or not len(values):
        return [None], np.zeros(len(values), np.intp)
    if (values == values[0]).all():  # the usual batch: one link's parameters, as configured
        distinct, inverse = values[:1], np.zeros(len(values), np.intp)
    else:
        distinct, inverse = np.unique(values, axis=0, return_inverse=True)
    return [_problem(protocol, tuple(map(float, row))) for row in distinct], inverse.reshape(-1)


@lru_cache(maxsize=4096)
def _problem(protocol: str, row: tuple[float, ...]) -> tuple[str, str] | None:
    try:
        params_model(protocol).model_validate(dict(zip(PROTOCOLS[protocol].param_names, row)))
    except ValidationError as exc:
        error = exc.errors()[0]
        cause = (error.get("ctx") or {}).get("error")
        name = cause.field if isinstance(cause, FieldError) else str(error["loc"][0])
        message = str(cause) if isinstance(cause, FieldError) else error["msg"]
        link_type = get_args(DOMAINS[protocol][0].model_fields["type"].annotation)[0]
        return name, f"{message} (as for a {link_type} link)"
    return None
