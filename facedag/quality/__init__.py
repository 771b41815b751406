"""Numbers to judge a swap by: reconstruction and video metrics, the evaluate steps."""
