"""Local Apache Kafka (KRaft), Redis and moto (AWS APIs) on one machine: the launchers the test
suite uses, and ``mirrorscope services up|down|status`` (stream_app.services.cli) for trying
the distributed mode without a cluster.

Submodules: ``kafka`` (LocalKafka, create_topic, ...), ``redis`` (LocalRedis), ``moto``
(MotoServer, CREDENTIALS). Nothing is imported here, so importing one launcher does not load
the others' client libraries.
"""
