package adstream.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedWriter;
import java.io.FileWriter;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.EmitStrategy;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * The Kafka Streams peer of adstream: the same job on the same topic, for the comparison in
 * BENCHMARKS.md.
 *
 * <p>Reads the topic from the earliest offset (a fresh application id per run), takes each event's
 * time from its {@code timestamp} field, keeps the events adstream would accept, re-keys them by
 * campaign × ad format (a repartition topic, as Kafka Streams does for any new key), then {@code
 * windowedBy(TimeWindows.ofSizeAndGrace(10 s, 5 s))} with {@code EmitStrategy.onWindowClose()}:
 * impressions, clicks and revenue (integer micro-units, exact) per window, each window emitted once
 * when its stream time passes its end plus the grace. Windows still open when the input ends are
 * never emitted (Kafka Streams has no end-of-input flush), so the comparison covers the windows
 * that closed. Rows go to --out as JSON lines.
 *
 * <p>One stream thread (the default). Stops (closes the streams instance, which finishes the
 * record in hand) once the aggregator has seen --events events, or fewer plus those Kafka Streams
 * dropped as late (its {@code dropped-records-total}, reported as {@code late_dropped}). Prints one line {@code PEER_SUMMARY {json}}: the events the windows saw, the
 * start-up time (JVM start to the first event aggregated) and the time from then to the stop.
 *
 * <p>Usage: {@code KStreamsPeer --brokers B --topic T --out FILE --app-id ID --state-dir DIR
 * --events N [--threads 1]}.
 */
public final class KStreamsPeer {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final Set<String> FORMATS = Set.of("banner", "interstitial", "rewarded_video");

  /** Per-window sums: impressions, clicks, revenue in micro-units. */
  static final class Agg {
    long impressions;
    long clicks;
    long micros;
  }

  static final class AggSerde implements Serde<Agg> {
    @Override
    public Serializer<Agg> serializer() {
      return (topic, a) ->
          a == null
              ? null
              : ByteBuffer.allocate(24).putLong(a.impressions).putLong(a.clicks).putLong(a.micros).array();
    }

    @Override
    public Deserializer<Agg> deserializer() {
      return (topic, b) -> {
        if (b == null) {
          return null;
        }
        ByteBuffer buf = ByteBuffer.wrap(b);
        Agg a = new Agg();
        a.impressions = buf.getLong();
        a.clicks = buf.getLong();
        a.micros = buf.getLong();
        return a;
      };
    }
  }

  /** Event JSON → tree, or null for bytes that are not JSON (then filtered out). */
  static final class JsonSerde implements Serde<JsonNode> {
    @Override
    public Serializer<JsonNode> serializer() {
      return (topic, n) -> {
        try {
          return n == null ? null : JSON.writeValueAsBytes(n);
        } catch (IOException e) {
          throw new IllegalStateException(e);
        }
      };
    }

    @Override
    public Deserializer<JsonNode> deserializer() {
      return (topic, b) -> {
        try {
          return b == null ? null : JSON.readTree(b);
        } catch (IOException e) {
          return null;
        }
      };
    }
  }

  /** Event time from the JSON; an event without a valid one keeps its partition's time (and is dropped by the filter). */
  static final class EventTime implements TimestampExtractor {
    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
      Long ms = eventMillis(record.value());
      return ms != null ? ms : Math.max(partitionTime, 0);
    }
  }

  static Long eventMillis(Object value) {
    if (!(value instanceof JsonNode n) || !n.path("timestamp").isTextual()) {
      return null;
    }
    try {
      return LocalDateTime.parse(n.get("timestamp").asText()).toInstant(ZoneOffset.UTC).toEpochMilli();
    } catch (RuntimeException e) {
      return null;
    }
  }

  /** The same validation adstream applies to these fields; generated events all pass. */
  static boolean valid(JsonNode e) {
    if (e == null || eventMillis(e) == null || !e.path("campaign_id").isTextual() || !e.path("revenue").isNumber()) {
      return false;
    }
    String type = e.path("event_type").asText("");
    return (type.equals("impression") || type.equals("click")) && FORMATS.contains(e.path("ad_format").asText(""));
  }

  static Agg one(JsonNode e) {
    Agg a = new Agg();
    if (e.get("event_type").asText().equals("click")) {
      a.clicks = 1;
    } else {
      a.impressions = 1;
    }
    a.micros = new BigDecimal(e.get("revenue").asText()).movePointRight(6).longValueExact();
    return a;
  }

  /** Records the tasks dropped (for an expired window, or unreadable). */
  static long dropped(KafkaStreams streams) {
    double sum = 0;
    for (var e : streams.metrics().entrySet()) {
      if (e.getKey().name().equals("dropped-records-total") && e.getValue().metricValue() instanceof Double d) {
        sum += d;
      }
    }
    return (long) sum;
  }

  public static void main(String[] argv) throws Exception {
    long t0 = System.nanoTime();
    double jvmUp = java.lang.management.ManagementFactory.getRuntimeMXBean().getUptime() / 1000.0;
    Map<String, String> args = new HashMap<>();
    for (int i = 0; i + 1 < argv.length; i += 2) {
      args.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
    }
    long events = Long.parseLong(args.get("events"));

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, args.get("app-id"));
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("brokers"));
    p.put(StreamsConfig.STATE_DIR_CONFIG, args.get("state-dir"));
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, args.getOrDefault("threads", "1"));
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    // Check for closed windows after every record instead of at most once a
    // second (the default throttle), so every window that could close has
    // been emitted when the last event is aggregated.
    p.put("__emit.interval.ms.kstreams.windowed.aggregation__", 0L);

    AtomicLong seen = new AtomicLong();
    long[] firstNanos = {0};
    BufferedWriter out = new BufferedWriter(new FileWriter(args.get("out")));
    AtomicLong rows = new AtomicLong();

    StreamsBuilder b = new StreamsBuilder();
    b.stream(args.get("topic"), Consumed.with(Serdes.ByteArray(), new JsonSerde()).withTimestampExtractor(new EventTime()))
        .filter((k, e) -> valid(e))
        .map((k, e) -> KeyValue.<String, Agg>pair(e.get("campaign_id").asText() + "|" + e.get("ad_format").asText(), one(e)))
        .groupByKey(Grouped.with(Serdes.String(), new AggSerde()))
        .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofSeconds(10), Duration.ofSeconds(5)))
        .emitStrategy(EmitStrategy.onWindowClose())
        .aggregate(
            Agg::new,
            (key, e, acc) -> {
              if (seen.incrementAndGet() == 1) {
                synchronized (firstNanos) {
                  firstNanos[0] = System.nanoTime();
                }
              }
              acc.impressions += e.impressions;
              acc.clicks += e.clicks;
              acc.micros += e.micros;
              return acc;
            },
            Materialized.with(Serdes.String(), new AggSerde()))
        .toStream()
        .foreach(
            (w, a) -> {
              String[] cf = w.key().split("\\|", 2);
              String line =
                  String.format(
                      "{\"window_start\":%d,\"campaign_id\":%s,\"ad_format\":%s,\"impressions\":%d,\"clicks\":%d,\"revenue\":\"%s\"}%n",
                      w.window().start() / 1000,
                      JSON.valueToTree(cf[0]).toString(),
                      JSON.valueToTree(cf[1]).toString(),
                      a.impressions,
                      a.clicks,
                      BigDecimal.valueOf(a.micros, 6).toPlainString());
              synchronized (out) {
                try {
                  out.write(line);
                } catch (IOException e) {
                  throw new IllegalStateException(e);
                }
              }
              rows.incrementAndGet();
            });

    KafkaStreams streams = new KafkaStreams(b.build(), p);
    streams.setUncaughtExceptionHandler(
        e -> {
          e.printStackTrace();
          System.exit(2);
          return null;
        });
    streams.start();
    // Every event is either aggregated or dropped as late (Kafka Streams'
    // own count of the records it skipped for expired windows).
    while (seen.get() + dropped(streams) < events) {
      Thread.sleep(20);
    }
    long late = dropped(streams);
    streams.close(Duration.ofSeconds(60));
    long end = System.nanoTime();
    synchronized (out) {
      out.close();
    }
    double startup;
    synchronized (firstNanos) {
      startup = jvmUp + (firstNanos[0] - t0) / 1e9;
      System.out.printf(
          "PEER_SUMMARY {\"counted\": %d, \"late_dropped\": %d, \"rows\": %d, \"startup_s\": %.3f, \"query_s\": %.3f}%n",
          seen.get(), late, rows.get(), startup, (end - firstNanos[0]) / 1e9);
    }
    System.out.flush();
    System.exit(0);
  }
}
