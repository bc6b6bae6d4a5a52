"""The billkit AWS stack: Pulumi components (one per file) and the pure topology model."""

import warnings

# pulumi_aws warns, on import of a service module, about its deprecated aliases (BucketV2, …),
# which this program never uses. Silence only those, only from pulumi_aws.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pulumi_aws\.")
