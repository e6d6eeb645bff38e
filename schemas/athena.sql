-- The Parquet span archive as an Athena table (see docs/data-model.md).
--
-- Replace @BUCKET@ and @ARCHIVE_PREFIX@ (Settings.bucket, Settings.archive_prefix,
-- e.g. spanstream-archive and archive/) before running it.
--
-- Partitions are projected, so no crawler or MSCK REPAIR is needed:
--   tenant  injected: every query names its tenant (WHERE tenant = '...'),
--           in its key-encoded form (spanstream.sinks.keys.encode_component),
--           which is the name itself for names of letters, digits, - and _.
--   dt      UTC date of the span start, yyyy-MM-dd.
--   hour    UTC hour of the span start, 0-23 (two digits in the key).
-- The files also hold a `tenant` column with the raw name; Athena does not
-- allow a data column named like a partition column, so it is left out here.
CREATE EXTERNAL TABLE IF NOT EXISTS spanstream_spans (
  `trace_id` string,
  `span_id` string,
  `parent_span_id` string,
  `service` string,
  `operation` string,
  `span_name` string,
  `span_kind` string,
  `start_unix_nanos` bigint,
  `end_unix_nanos` bigint,
  `duration_nanos` bigint,
  `status_code` string,
  `status_message` string,
  `is_error` boolean,
  `http_method` string,
  `http_route` string,
  `http_status_code` int,
  `peer_service` string,
  `db_system` string,
  `messaging_system` string,
  `cloud_region` string,
  `cloud_account_id` string,
  `faas_name` string,
  `is_cold_start` boolean,
  `event_count` int,
  `resource_attributes` map<string,string>,
  `span_attributes` map<string,string>,
  `scope_name` string,
  `source_shard_id` string,
  `source_sequence_number` string,
  `source_sub_sequence_number` bigint,
  `arrival_unix_millis` bigint
)
PARTITIONED BY (
  `tenant` string,
  `dt` string,
  `hour` int
)
STORED AS PARQUET
LOCATION 's3://@BUCKET@/@ARCHIVE_PREFIX@'
TBLPROPERTIES (
  'parquet.compression' = 'ZSTD',
  'projection.enabled' = 'true',
  'projection.tenant.type' = 'injected',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2024-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = 's3://@BUCKET@/@ARCHIVE_PREFIX@tenant=${tenant}/dt=${dt}/hour=${hour}'
);

-- The trace summary archive (spanstream.sinks.summaries, the default
-- SPANSTREAM_TRACE_SUMMARY_STORE=archive). Replace @TRACE_ARCHIVE_PREFIX@
-- (Settings.trace_archive_prefix, e.g. traces/). Partitions as above, by the
-- UTC date and hour of the trace's start.
CREATE EXTERNAL TABLE IF NOT EXISTS spanstream_trace_summaries (
  `trace_id` string,
  `root_service` string,
  `root_operation` string,
  `start_unix_nanos` bigint,
  `end_unix_nanos` bigint,
  `duration_nanos` bigint,
  `span_count` bigint,
  `error_count` bigint,
  `cold_start_count` bigint,
  `services` array<string>,
  `services_omitted` bigint
)
PARTITIONED BY (
  `tenant` string,
  `dt` string,
  `hour` int
)
STORED AS PARQUET
LOCATION 's3://@BUCKET@/@TRACE_ARCHIVE_PREFIX@'
TBLPROPERTIES (
  'parquet.compression' = 'ZSTD',
  'projection.enabled' = 'true',
  'projection.tenant.type' = 'injected',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2024-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = 's3://@BUCKET@/@TRACE_ARCHIVE_PREFIX@tenant=${tenant}/dt=${dt}/hour=${hour}'
);

-- A trace re-summarised after late spans (or summarised twice around a
-- crash) has several rows; its latest state has the most spans, then the
-- latest end, as spanstream.sinks.summaries.latest_state chooses.
CREATE OR REPLACE VIEW spanstream_trace_summaries_latest AS
SELECT * FROM (
  SELECT *, row_number() OVER (
    PARTITION BY tenant, trace_id
    ORDER BY span_count DESC, end_unix_nanos DESC, start_unix_nanos DESC,
             error_count DESC, cold_start_count DESC
  ) AS state_rank
  FROM spanstream_trace_summaries
)
WHERE state_rank = 1;
