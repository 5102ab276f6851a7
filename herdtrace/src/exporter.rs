//! Prometheus exporter mode (`herdtrace --prometheus ADDR`): being written (issue #8).
