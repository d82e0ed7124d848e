"""The pipeline on this machine: template.yaml's stack in moto, the handlers in-process
(:mod:`.runner`), driven end to end by :mod:`.run` (``voucher-distributor local run``)."""
