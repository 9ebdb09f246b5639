"""AWS calls the user-data lab test makes from inside a network namespace (run there with
`ip netns exec NS python netns_aws.py COMMAND ...`, boto3 reaching the moto server that runs in
the same namespace through AWS_ENDPOINT_URL). Prints one JSON object."""

from __future__ import annotations

import json
import sys

import boto3


def seed(bucket: str, key: str, artifact: str, stream: str) -> dict:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(artifact, bucket, key)
    boto3.client("kinesis").create_stream(StreamName=stream, ShardCount=2)
    # An autoscaling group with one instance: the user data reports a failed bootstrap to it.
    ec2 = boto3.client("ec2")
    lt = ec2.create_launch_template(LaunchTemplateName="collectors", LaunchTemplateData={
        "ImageId": "ami-0123456789abcdef0", "InstanceType": "c6in.large"})["LaunchTemplate"]
    asg = boto3.client("autoscaling")
    asg.create_auto_scaling_group(
        AutoScalingGroupName="mirrorscope-collectors", MinSize=1, MaxSize=1, DesiredCapacity=1,
        LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"]}, AvailabilityZones=["us-east-1a"])
    [inst] = asg.describe_auto_scaling_groups(
        AutoScalingGroupNames=["mirrorscope-collectors"])["AutoScalingGroups"][0]["Instances"]
    return {"instance_id": inst["InstanceId"], "health": inst["HealthStatus"]}


def put(bucket: str, key: str, data: str) -> dict:
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data.encode())
    return {}


def upload(bucket: str, key: str, path: str) -> dict:
    boto3.client("s3").upload_file(path, bucket, key)
    return {}


def records(stream: str) -> dict:
    k = boto3.client("kinesis")
    total = 0
    for shard in k.list_shards(StreamName=stream)["Shards"]:
        it = k.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            resp = k.get_records(ShardIterator=it, Limit=1000)
            total += len(resp["Records"])
            if not resp["Records"]:
                break
            it = resp.get("NextShardIterator")
    return {"records": total}


def health(instance_id: str) -> dict:
    [inst] = boto3.client("autoscaling").describe_auto_scaling_instances(
        InstanceIds=[instance_id])["AutoScalingInstances"]
    return {"health": inst["HealthStatus"]}


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    print(json.dumps({"seed": seed, "put": put, "upload": upload, "records": records, "health": health}[command](*args)))
