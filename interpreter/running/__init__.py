"""One job's run: its life from claim to record (``lifecycle``), and the runner that turns a job
into a process and its outcome into a result (``runner``)."""
