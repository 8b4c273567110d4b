#!/usr/bin/env python3
"""A third-party (non-Rust) Kafka client for tidemark's tests: kafka-python.

  kafka_client.py produce BROKERS COUNT   produce COUNT valid txn envelopes plus three
                                          malformed records to fp.bus.ingress.v1; prints JSON
  kafka_client.py decisions BROKERS       read fp.bus.decisions.v1 from the beginning to the
                                          end; prints JSON with the decided event ids
  kafka_client.py signed BROKERS COUNT    produce COUNT correctly signed txn envelopes and
                                          1,000 mutated ones (see `signed`); keys from
                                          TIDEMARK_SIGNING_KEY_CARD_SWITCH_1 and
                                          TIDEMARK_SIGNING_KEY_AUTH_SERVICE_1; prints JSON with
                                          the (partition, offset, expected reason) of each
  kafka_client.py scram BROKERS USER      create SCRAM-SHA-256 and SCRAM-SHA-512 credentials for
                                          USER with the password in TIDEMARK_KAFKA_SASL_PASSWORD
                                          (the AlterUserScramCredentials API); prints JSON

Requires kafka-python (pip install kafka-python==3.0.12).
"""
import json
import sys

try:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
except ImportError:
    sys.exit("kafka-python is not installed: pip install kafka-python==3.0.12")

INGRESS = "fp.bus.ingress.v1"
DECISIONS = "fp.bus.decisions.v1"
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FINGERPRINT = "ab" * 32


def ts_utc(ms):
    import datetime

    d = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def envelope(i):
    account = f"py-acct-{i % 37}"
    return account, {
        "event_id": f"py-ev-{i}",
        "event_type": "txn.authorization.v1",
        "ts_utc": ts_utc(START_MS + i * 1000),
        "manifest_fingerprint": FINGERPRINT,
        "schema_version": 1,
        "producer": "card-switch",
        "trace_id": f"py-tr-{i}",
        "payload": {
            "txn_id": f"py-txn-{i}",
            "account_id": account,
            "card_id": f"py-card-{i % 53}",
            "merchant_id": f"py-m-{i % 11}",
            "device_id": f"py-dev-{i % 29}",
            "ip": f"10.9.{i % 7}.{i % 200}",
            "email": f"py-user-{i % 37}",
            "amount_minor": 1000 + (i * 7919) % 90000,
            "currency": "EUR",
            "mcc": "5411",
            "channel": "ecom",
            "country": "NL",
        },
    }


def produce(brokers, count):
    p = KafkaProducer(bootstrap_servers=brokers, acks="all")
    futures = []
    for i in range(count):
        key, env = envelope(i)
        ts = START_MS + i * 1000
        futures.append(
            p.send(INGRESS, key=key.encode(), value=json.dumps(env).encode(), timestamp_ms=ts)
        )
    last = START_MS + count * 1000
    bad = [
        b"{this is not json",
        json.dumps({k: v for k, v in envelope(count)[1].items() if k != "producer"}).encode(),
        json.dumps(dict(envelope(count + 1)[1], event_type="txn.unknown.v9")).encode(),
    ]
    for b in bad:
        futures.append(p.send(INGRESS, key=b"py-bad", value=b, timestamp_ms=last))
    for f in futures:
        f.get(timeout=30)
    p.flush()
    p.close()
    print(json.dumps({"produced": count, "malformed": len(bad)}))


def sign(key_id, secret, signed_at, value):
    """The headers of docs/operations.md: HMAC-SHA256 over "v1.<key id>.<signed at>.<value>"."""
    import hashlib
    import hmac

    at = str(signed_at).encode()
    msg = b"v1." + key_id.encode() + b"." + at + b"." + value
    tag = hmac.new(secret, msg, hashlib.sha256).hexdigest()
    return [
        ("tm-key-id", key_id.encode()),
        ("tm-signed-at", at),
        ("tm-signature", b"v1=" + tag.encode()),
    ]


def signed(brokers, count):
    import os
    import random

    rng = random.Random(7)
    card = os.environ["TIDEMARK_SIGNING_KEY_CARD_SWITCH_1"].encode()
    auth = os.environ["TIDEMARK_SIGNING_KEY_AUTH_SERVICE_1"].encode()
    p = KafkaProducer(bootstrap_servers=brokers, acks="all")
    sent = []  # (future, expected reason or None)

    def send(key, value, ts, headers, expect):
        f = p.send(INGRESS, key=key, value=value, timestamp_ms=ts, headers=headers)
        sent.append((f, expect))

    valid = []
    for i in range(count):
        key, env = envelope(i)
        ts = START_MS + i * 1000
        value = json.dumps(env).encode()
        h = sign("card-switch-1", card, ts, value)
        valid.append((key.encode(), value, ts, h))
        send(key.encode(), value, ts, h, None)

    def flip(b):
        b = bytearray(b)
        i = rng.randrange(len(b) * 8)
        b[i // 8] ^= 1 << (i % 8)
        return bytes(b)

    last = START_MS + count * 1000
    kinds = ["payload_bit", "signature_bit", "wrong_key", "other_producer_key",
             "unknown_key_id", "unsigned", "stale", "replayed"]
    for j in range(1000):
        kind = kinds[j % len(kinds)]
        key, env = envelope(count + 10 + j)
        value = json.dumps(env).encode()
        ts = last + j
        expect = "BAD_SIGNATURE"
        if kind == "payload_bit":
            h = sign("card-switch-1", card, ts, value)
            value = flip(value)
        elif kind == "signature_bit":
            h = sign("card-switch-1", card, ts, value)
            h[2] = (h[2][0], h[2][1][:3] + flip(h[2][1][3:]))
        elif kind == "wrong_key":
            h = sign("card-switch-1", bytes(rng.randrange(256) for _ in range(40)), ts, value)
        elif kind == "other_producer_key":
            h = sign("auth-service-1", auth, ts, value)
        elif kind == "unknown_key_id":
            h = sign("card-switch-9", card, ts, value)
        elif kind == "unsigned":
            h = []
        elif kind == "stale":
            h = sign("card-switch-1", card, ts - 600_000, value)
        else:
            # Replayed: one of the last valid records sent again, byte for byte, signature
            # included, within the signing skew and before the watermark passes it: dedup
            # catches it (older replays are LATE_EVENT or, beyond the skew, BAD_SIGNATURE).
            key, value, _, h = valid[-1 - rng.randrange(4)]
            expect = "DUPLICATE"
        send(key if isinstance(key, bytes) else key.encode(), value, ts, h, expect)
    out = []
    for f, expect in sent:
        m = f.get(timeout=30)
        out.append([m.partition, m.offset, expect])
    p.flush()
    p.close()
    print(json.dumps({"records": out}))


def decisions(brokers):
    c = KafkaConsumer(
        bootstrap_servers=brokers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    parts = [TopicPartition(DECISIONS, p) for p in sorted(c.partitions_for_topic(DECISIONS))]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    end = c.end_offsets(parts)
    events, intents = [], 0
    while any(c.position(tp) < end[tp] for tp in parts):
        for records in c.poll(timeout_ms=1000).values():
            for r in records:
                m = json.loads(r.value)
                if m["type"] == "decision.v1":
                    events.append([m["event_id"], m["decision"], m["decision_id"]])
                elif m["type"] == "action.intent.v1":
                    intents += 1
    c.close()
    events.sort()
    print(json.dumps({"decisions": events, "intents": intents}))


def scram(brokers, user):
    import os

    from kafka import KafkaAdminClient
    from kafka.admin import ScramMechanism, UserScramCredentialUpsertion

    password = os.environ["TIDEMARK_KAFKA_SASL_PASSWORD"]
    admin = KafkaAdminClient(bootstrap_servers=brokers)
    errors = admin.alter_user_scram_credentials(
        [
            UserScramCredentialUpsertion(user, m, password, iterations=4096)
            for m in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)
        ]
    )
    admin.close()
    print(json.dumps({"errors": {u: e for u, e in errors.items() if e}}))


if __name__ == "__main__":
    cmd, brokers = sys.argv[1], sys.argv[2]
    if cmd == "produce":
        produce(brokers, int(sys.argv[3]))
    elif cmd == "decisions":
        decisions(brokers)
    elif cmd == "signed":
        signed(brokers, int(sys.argv[3]))
    elif cmd == "scram":
        scram(brokers, sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")
