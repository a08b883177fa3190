"""Vast.ai's price model, as its documentation states it. Pure: no I/O, no clock.

Sources (vast-ai/docs):
- guides/reference/billing.mdx, "Pricing": there are separate prices for active rental (GPU, $/h),
  storage and bandwidth. The GPU ("base active rental") is charged for every second the instance is
  in the active/connected state -- running, not while it loads its image or is stopped. Storage is
  charged for every second the instance exists, in every state except offline (stopping does not
  avoid it). Bandwidth is charged for every byte sent or received, whatever the state.
- api-reference/openapi/yaml/search_offers.yaml, the offer fields: `dph_total` = total $/h of the
  offer, priced with the search's `allocated_storage` GB of disk (so storage is in it);
  `dph_base` = the GPU's $/h; `storage_cost` = $/GB/month; `inet_down_cost`, `inet_up_cost` = $/GB.

A month is 30 days (720 h) here and a GB is 10**9 bytes, as in Vast's own filters. Money is USD.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

GB = 1e9  # bytes
HOURS_PER_MONTH = 720.0  # storage_cost is $/GB/month; a month of 30 days
SECONDS_PER_HOUR = 3600.0


def _num(value: Any) -> float | None:
    try:
        number = None if value is None else float(value)
    except (TypeError, ValueError):
        return None
    return number if number is not None and number == number else None  # NaN is no price


@dataclass(frozen=True)
class Rates:
    """What one instance costs: GPU $/h while it runs, storage $/h while it exists, $/GB each way."""

    gpu_dph: float
    storage_dph: float = 0.0
    down_per_gb: float = 0.0  # bytes the instance receives (image pull, input download)
    up_per_gb: float = 0.0  # bytes the instance sends (result, manifest, log upload)

    @property
    def dph(self) -> float:
        """$/h while running, storage included: what Vast's `dph_total` says for the same disk."""
        return self.gpu_dph + self.storage_dph

    @classmethod
    def from_offer(cls, offer: dict[str, Any], disk_gb: float) -> Rates:
        """An offer (or an instance row, which carries the same fields) rented with `disk_gb` of disk.

        storage: `storage_cost` ($/GB/month) x disk / 720 h; without it, `dph_total - dph_base`.
        GPU: `dph_base`; without it, `dph_total` minus the storage. ValueError when neither price is given.
        """
        base, total = _num(offer.get("dph_base")), _num(offer.get("dph_total"))
        per_gb_month = _num(offer.get("storage_cost"))
        if per_gb_month is not None:
            storage = per_gb_month * float(disk_gb) / HOURS_PER_MONTH
        elif base is not None and total is not None:
            storage = max(0.0, total - base)
        else:
            storage = 0.0
        if base is not None:
            gpu = base
        elif total is not None:
            gpu = max(0.0, total - storage)
        else:
            raise ValueError("offer has neither dph_base nor dph_total")
        return cls(gpu_dph=gpu, storage_dph=storage,
                   down_per_gb=_num(offer.get("inet_down_cost")) or 0.0,
                   up_per_gb=_num(offer.get("inet_up_cost")) or 0.0)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rates:
        return cls(gpu_dph=float(data["gpu_dph"]), storage_dph=float(data.get("storage_dph", 0.0)),
                   down_per_gb=float(data.get("down_per_gb", 0.0)), up_per_gb=float(data.get("up_per_gb", 0.0)))


FREE = Rates(gpu_dph=0.0)  # the local machine: nothing billed


@dataclass(frozen=True)
class Cost:
    """USD, by what Vast bills separately."""

    gpu: float = 0.0
    storage: float = 0.0
    bandwidth: float = 0.0

    @property
    def total(self) -> float:
        return self.gpu + self.storage + self.bandwidth

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.gpu + other.gpu, self.storage + other.storage, self.bandwidth + other.bandwidth)

    def __mul__(self, times: float) -> Cost:
        """The same bill `times` over (the instances of a job's segments)."""
        return Cost(self.gpu * times, self.storage * times, self.bandwidth * times)

    def to_dict(self) -> dict[str, float]:
        return {"gpu": self.gpu, "storage": self.storage, "bandwidth": self.bandwidth, "total": self.total}


def cost(rates: Rates, *, running_s: float, exists_s: float, bytes_down: float = 0, bytes_up: float = 0) -> Cost:
    """What Vast bills an instance that existed `exists_s` seconds (created to destroyed, offline time
    excluded), of which it ran `running_s` (the container up: not pending, not loading its image),
    and that received `bytes_down` and sent `bytes_up` bytes."""
    if running_s < 0 or exists_s < 0 or bytes_down < 0 or bytes_up < 0:
        raise ValueError("durations and byte counts cannot be negative")
    return Cost(
        gpu=rates.gpu_dph * running_s / SECONDS_PER_HOUR,
        storage=rates.storage_dph * exists_s / SECONDS_PER_HOUR,
        bandwidth=(bytes_down * rates.down_per_gb + bytes_up * rates.up_per_gb) / GB,
    )
