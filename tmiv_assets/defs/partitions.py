"""Partition definitions, declared once and imported everywhere."""

import dagster as dg

dataset_partitions = dg.DynamicPartitionsDefinition(name="dataset")
series_partitions = dg.DynamicPartitionsDefinition(name="series")
# nycflights13 batches are from 2013; later batches simply extend the range.
day_partitions = dg.DailyPartitionsDefinition(start_date="2013-01-01")
batch_partitions = dg.MultiPartitionsDefinition({"dataset": dataset_partitions, "day": day_partitions})
