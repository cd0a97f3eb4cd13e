"""Reference answers for lesson 01 (direct calls vs queues), and typical wrong ones."""

ANSWERS = {
    "01.1": {"broker, one consumer, no crash", "SQS FIFO queue, one message group",
             "Kafka topic, one partition"},
    "01.2": 10,     # outage(retries=4, retry_pause=0.3).reached_service_in_window
    "01.3": 0.3,    # crash_before_ack(lease=0.3).redelivered_after
    "01.4": 175,    # the empty notification's line and headers are about 172 B
    "01.5": 60,     # fan_out(groups={"emails": 4, "analytics": 1, "invoices": 1}): 3 x 20
}

WRONG = {
    "01.1": [
        # what the lecture notes suggest: every queue keeps order
        {"broker, one consumer, no crash", "broker, three consumers", "SQS standard queue",
         "SQS FIFO queue, one message group", "Kafka topic, one partition",
         "Kafka topic, across partitions"},
        {"broker, one consumer, no crash", "SQS FIFO queue, one message group"},
        {"broker, one consumer, no crash", "broker, one consumer, a crash before an ack",
         "SQS FIFO queue, one message group", "Kafka topic, one partition"},
        "SQS FIFO queue, one message group",
        {"RabbitMQ"},
    ],
    "01.2": [0, 9, 20, 30],
    "01.3": [1.0, 0, 0.6, "0.3"],
    "01.4": [1024, 1000, 36, 100],
    "01.5": [20, 120, 80, "60"],   # one group; 20 for each of 6 consumers; 4 workers x 20
}
