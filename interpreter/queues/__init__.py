"""Where jobs wait and who takes them: the ``JobQueue`` protocol (``base``), the embedded
in-process queue (``local.LocalQueue``) and the PostgreSQL one (``procrastinate``)."""
