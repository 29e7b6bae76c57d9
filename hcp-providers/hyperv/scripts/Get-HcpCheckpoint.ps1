<#
.SYNOPSIS
    Lists a VM's checkpoints, oldest first: id, name, creation time, the state each captured and
    whether it holds the VM's memory.
.DESCRIPTION
    Lists the checkpoints Hyper-V Manager shows (SnapshotType Standard, which Production
    checkpoints are too); backup software's Recovery checkpoints and Hyper-V Replica's are not
    the VM owner's and are left out. A checkpoint's State is the state it captured: Running,
    Paused or Saved when it holds memory (a Standard checkpoint of a VM that was running), Off
    when it holds only the disks (every Production checkpoint, and any checkpoint of a VM that
    was off).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9-]{0,127}$')][string]$VmId,
    [ValidatePattern('^$|^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')][string]$NativeId,
    [bool]$Cluster
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
Import-Module -Name (Join-Path -Path $PSScriptRoot -ChildPath 'HcpCommon.psm1') -Force

$vm = Get-HcpVmOrThrow -VmId $VmId -NativeId $NativeId -Cluster $Cluster
$checkpoints = @(Get-VMSnapshot -VM $vm -SnapshotType Standard | Sort-Object -Property CreationTime, Id)
$items = @(foreach ($checkpoint in $checkpoints) {
        Get-HcpCheckpointView -Checkpoint $checkpoint
    })
[ordered]@{ Checkpoints = $items }
