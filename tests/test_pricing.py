"""vastdrop.pricing: Vast's documented price model, checked against figures worked by hand."""

from __future__ import annotations

import pytest

from vastdrop.pricing import FREE, GB, HOURS_PER_MONTH, Cost, Rates, cost

# An offer as search_offers returns it for allocated_storage=30: GPU $0.40/h, storage $0.12/GB/month
# (30 GB: 0.12 * 30 / 720 = $0.005/h), so dph_total = 0.405; bandwidth $0.002/GB in, $0.01/GB out.
OFFER = {"id": 7, "gpu_name": "RTX 4090", "dph_base": 0.40, "dph_total": 0.405, "storage_cost": 0.12,
         "inet_down_cost": 0.002, "inet_up_cost": 0.01, "inet_down": 800.0, "inet_up": 400.0}


def test_rates_from_an_offer_split_gpu_and_storage_by_the_disk_rented():
    rates = Rates.from_offer(OFFER, disk_gb=30)
    assert rates.gpu_dph == pytest.approx(0.40)
    assert rates.storage_dph == pytest.approx(0.005)  # 0.12 $/GB/month x 30 GB / 720 h
    assert rates.down_per_gb == 0.002 and rates.up_per_gb == 0.01
    assert rates.dph == pytest.approx(OFFER["dph_total"])  # what the search priced for our disk
    # Storage scales with the disk; the GPU price does not.
    big = Rates.from_offer(OFFER, disk_gb=100)
    assert big.storage_dph == pytest.approx(0.12 * 100 / 720) and big.gpu_dph == pytest.approx(0.40)
    assert HOURS_PER_MONTH == 720 and GB == 1e9


def test_rates_from_an_offer_without_dph_base_take_the_storage_out_of_dph_total():
    # dph_total 0.3475 for 30 GB at $0.18/GB/month: storage 0.0075, GPU 0.34.
    rates = Rates.from_offer({"dph_total": 0.3475, "storage_cost": 0.18}, disk_gb=30)
    assert rates.storage_dph == pytest.approx(0.0075) and rates.gpu_dph == pytest.approx(0.34)
    assert rates.down_per_gb == 0 and rates.up_per_gb == 0  # not given: nothing charged
    # Without storage_cost the difference of the two prices is the storage.
    rates = Rates.from_offer({"dph_total": "0.5", "dph_base": "0.45"}, disk_gb=30)
    assert rates.gpu_dph == pytest.approx(0.45) and rates.storage_dph == pytest.approx(0.05)
    # Only dph_total: all of it is charged as GPU (never an under-count while running).
    assert Rates.from_offer({"dph_total": 0.3}, disk_gb=30) == Rates(gpu_dph=0.3)
    with pytest.raises(ValueError, match="dph_base nor dph_total"):
        Rates.from_offer({"storage_cost": 0.1}, disk_gb=30)


def test_cost_bills_gpu_while_running_storage_while_existing_and_every_byte():
    rates = Rates.from_offer(OFFER, disk_gb=30)
    # 2,000 s alive, of which 200 s loading the image: 1,800 s running; 5 GB down, 2 GB up.
    bill = cost(rates, running_s=1800, exists_s=2000, bytes_down=5 * GB, bytes_up=2 * GB)
    assert bill.gpu == pytest.approx(0.20)  # 0.40 $/h x 0.5 h
    assert bill.storage == pytest.approx(0.005 * 2000 / 3600)  # 0.0027778
    assert bill.bandwidth == pytest.approx(5 * 0.002 + 2 * 0.01)  # 0.03
    assert bill.total == pytest.approx(0.20 + 0.0027778 + 0.03, abs=1e-7)
    assert bill.to_dict() == {"gpu": bill.gpu, "storage": bill.storage, "bandwidth": bill.bandwidth,
                              "total": bill.total}


def test_an_instance_that_never_ran_bills_storage_and_bandwidth_only():
    rates = Rates.from_offer(OFFER, disk_gb=30)
    bill = cost(rates, running_s=0, exists_s=900, bytes_down=4.5 * GB)  # stuck loading 15 minutes
    assert bill.gpu == 0
    assert bill.storage == pytest.approx(0.005 / 4)  # 0.00125
    assert bill.bandwidth == pytest.approx(0.009)
    assert cost(FREE, running_s=3600, exists_s=3600, bytes_down=GB, bytes_up=GB) == Cost()


def test_rates_round_trip_through_a_ledger_dict_and_costs_add_up():
    rates = Rates.from_offer(OFFER, disk_gb=30)
    assert Rates.from_dict(rates.to_dict()) == rates
    assert set(rates.to_dict()) == {"gpu_dph", "storage_dph", "down_per_gb", "up_per_gb"}
    assert Rates.from_dict({"gpu_dph": 0.2}) == Rates(gpu_dph=0.2)  # older records: GPU only
    total = Cost(1.0, 0.5, 0.25) + Cost(0.5, 0.25, 0.125)
    assert total == Cost(1.5, 0.75, 0.375) and total.total == pytest.approx(2.625)


def test_negative_durations_or_bytes_are_refused():
    with pytest.raises(ValueError):
        cost(FREE, running_s=-1, exists_s=0)
    with pytest.raises(ValueError):
        cost(FREE, running_s=0, exists_s=0, bytes_up=-5)
