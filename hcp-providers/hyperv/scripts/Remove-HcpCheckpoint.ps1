<#
.SYNOPSIS
    Deletes the checkpoint named CheckpointName, keeping the VM's current state. A checkpoint
    that is already gone is not an error.
.DESCRIPTION
    Hyper-V merges the checkpoint's differencing disks into its child (or into the running VM's
    disks) in the background; its child checkpoints stay. HCP treats checkpoint names as unique
    per VM: a name that several checkpoints share is refused rather than guessed.
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
$checkpoint = Get-HcpCheckpointByName -VM $vm -Name $CheckpointName
if (-not $checkpoint) {
    return [ordered]@{ Existed = $false }
}
Remove-VMSnapshot -VMSnapshot $checkpoint -Confirm:$false
[ordered]@{ Existed = $true }
