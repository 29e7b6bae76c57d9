<#
.SYNOPSIS
    Takes a checkpoint of a VM and returns its id.
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
if (Get-VMSnapshot -VM $vm -Name $CheckpointName -ErrorAction SilentlyContinue) {
    throw (New-HcpError -Category ResourceExists -ErrorId 'CheckpointExists' -Message "A checkpoint named '$CheckpointName' already exists for virtual machine '$($vm.Name)'.")
}
Checkpoint-VM -VM $vm -SnapshotName $CheckpointName
$checkpoint = Get-VMSnapshot -VM $vm -Name $CheckpointName
[ordered]@{ Id = $checkpoint.Id.ToString() }
