"""Detectors: rules over the events topic that raise alerts.

SigmaDetectorConfig is the detection section of the settings; its build() gives the Detector
(ctrail.components) the detect stage runs. Modules:
- field_mapping: the pySigma ProcessingPipeline, Sigma field names -> event fields
- sigma_rules: rule files -> compiled rules (collect_errors: broken rules reported, skipped)
- matcher, values: a Sigma condition tree -> a predicate over one event
- attack: Sigma ATT&CK tags -> ECS threat.*
- alerts: a matched rule and event -> the Alert
- sigma_detector: the config and the Detector
- history_rules, history_engine, first_seen, spike, learning, history_replay: first-seen
  (new_terms) and spike rules, their state in the correlate stage (learning: what the two states
  share), and their backfill and hunt over the store
"""

from detectors.sigma_detector import SigmaDetector, SigmaDetectorConfig
from detectors.sigma_rules import PACKAGED_RULES, CompiledRule, LoadError, RuleSet, load_rules

__all__ = ["PACKAGED_RULES", "CompiledRule", "LoadError", "RuleSet", "SigmaDetector",
           "SigmaDetectorConfig", "load_rules"]
