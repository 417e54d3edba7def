"""The science tooling above the training run: the replication (`replication` runs the arms,
`replication_report` and `posttrain_report` write its tables and plots) and post-training
(`posttrain`)."""
