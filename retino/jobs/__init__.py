"""The jobs stage: one job's lifecycle (validate → GPU lease → decide skip / resume / new, with
the reason → tracked run → training → the MLflow model → error policy), its identity, the launchers'
sizing and GPU leases, and stop signals. Works from a plain job context, never HydraConfig."""
