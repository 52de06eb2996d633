"""One OS process and what it leaves: what to start (``spec``), starting and waiting for it
(``run``), its process group while it runs (``child``), its output (``output``), the files it
changed (``filetrack``) and what must die with the server (``orphans``). Nothing here knows
what a job is."""
