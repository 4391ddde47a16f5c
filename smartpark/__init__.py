"""The smart-park domain: zone geometry, synthetic scenes, the detector, decoding, tracking, rules, metrics.

The numpy parts are importable by the agent; torch is imported lazily by the detector only.
(Its contents arrive with the smart-park vision capability, issue #3.)
"""
