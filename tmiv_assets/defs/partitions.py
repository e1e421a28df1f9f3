"""Partition definitions, declared once and imported everywhere."""

import dagster as dg

dataset_partitions = dg.DynamicPartitionsDefinition(name="dataset")
series_partitions = dg.DynamicPartitionsDefinition(name="series")
# The days that have a batch file, added by `incoming_batches_sensor` as it finds them: a calendar of every day
# since the first batch would bury the few real ones among thousands of empty partitions.
batch_day_partitions = dg.DynamicPartitionsDefinition(name="batch_day")
batch_partitions = dg.MultiPartitionsDefinition({"dataset": dataset_partitions, "day": batch_day_partitions})
