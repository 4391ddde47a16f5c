"""The integer model contract: the IR and its numpy reference executor, the package format, crypto, blobs.

numpy only, no torch. (Its contents arrive with the compression and model-store capabilities, issues #4-#5.)
"""
