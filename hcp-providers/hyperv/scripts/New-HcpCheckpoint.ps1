<#
.SYNOPSIS
    Takes a checkpoint of a VM and returns its id.
.DESCRIPTION
    The checkpoint is of the type the VM is configured for (Set-VM -CheckpointType); HCP does
    not change it. Hyper-V's default, and so that of every VM HCP creates, is Production: an
    application-consistent checkpoint of the disks through VSS (Windows) or a file system freeze
    (Linux) in the guest, without memory; applying it leaves the VM off. When the guest cannot
    take one, Production falls back to a Standard checkpoint, which holds the memory of a running
    VM; ProductionOnly fails instead. Standard checkpoints hold the memory of a running VM.
    Get-HcpCheckpoint.ps1 reports which each checkpoint holds. A name already taken on the VM
    is refused (Hyper-V would accept it twice; HCP treats names as unique per VM).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9-]{0,127}$')][string]$VmId,
    [ValidatePattern('^$|^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')][string]$NativeId,
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$')][string]$CheckpointName,
    [bool]$Cluster
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
Import-Module -Name (Join-Path -Path $PSScriptRoot -ChildPath 'HcpCommon.psm1') -Force

$vm = Get-HcpVmOrThrow -VmId $VmId -NativeId $NativeId -Cluster $Cluster
if (Get-HcpCheckpointByName -VM $vm -Name $CheckpointName) {
    throw (New-HcpError -Category ResourceExists -ErrorId 'CheckpointExists' -Message "A checkpoint named '$CheckpointName' already exists for virtual machine '$($vm.Name)'.")
}
Checkpoint-VM -VM $vm -SnapshotName $CheckpointName
$checkpoint = Get-HcpCheckpointByName -VM $vm -Name $CheckpointName
[ordered]@{ Id = $checkpoint.Id.ToString() }
