"""Production feedback as event streams: prediction events and ground-truth labels on Kafka
(schema), and the durable record that joins them."""
