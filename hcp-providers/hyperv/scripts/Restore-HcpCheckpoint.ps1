<#
.SYNOPSIS
    Applies the checkpoint named CheckpointName to a VM and reports the VM's state afterwards.
.DESCRIPTION
    The VM's current state is discarded. A checkpoint that holds memory leaves the VM with that
    memory as its saved state; the script then starts it, so it runs on from the moment of the
    checkpoint. A disk-only checkpoint (Production) leaves the VM off. The reply reports the
    state Hyper-V shows after all that. HCP treats checkpoint names as unique per VM: a name
    that several checkpoints share is refused rather than guessed.
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
    throw (New-HcpError -Category ObjectNotFound -ErrorId 'CheckpointNotFound' -Message "Virtual machine '$($vm.Name)' has no checkpoint named '$CheckpointName'.")
}
$memory = (Get-HcpCheckpointView -Checkpoint $checkpoint).Memory
Restore-VMSnapshot -VMSnapshot $checkpoint -Confirm:$false
$vm = Get-VM -Id $vm.Id -ComputerName $vm.ComputerName
if ($memory -and $vm.State -eq 'Saved') {
    Start-VM -VM $vm
}
elseif ($memory -and $vm.State -eq 'Paused') {
    Resume-VM -VM $vm
}
$vm = Get-VM -Id $vm.Id -ComputerName $vm.ComputerName
[ordered]@{ MemoryKept = $memory; State = $vm.State.ToString() }
