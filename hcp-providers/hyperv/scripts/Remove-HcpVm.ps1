<#
.SYNOPSIS
    Removes a VM with its VHDX files, checkpoints and cloud-init seed ISO. A VM that is already
    gone is not an error. A running VM is refused unless Force is set, which turns it off first.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9-]{0,127}$')][string]$VmId,
    [ValidatePattern('^$|^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')][string]$NativeId,
    [bool]$Force,
    [bool]$Cluster
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
Import-Module -Name (Join-Path -Path $PSScriptRoot -ChildPath 'HcpCommon.psm1') -Force

$vm = Find-HcpVm -VmId $VmId -NativeId $NativeId -Cluster $Cluster
if (-not $vm) {
    return [ordered]@{ Existed = $false }
}
if ($vm.State -ne 'Off') {
    if (-not $Force) {
        throw (New-HcpError -Category InvalidOperation -ErrorId 'VmRunning' -Message "The virtual machine '$($vm.Name)' is running. Stop it first or remove it with Force.")
    }
    Stop-VM -VM $vm -TurnOff -Force
}
$files = @(Get-VMHardDiskDrive -VM $vm | ForEach-Object { $_.Path })
$files += @(Get-VMSnapshot -VM $vm | Get-VMHardDiskDrive | ForEach-Object { $_.Path })
$files += @(Get-VMDvdDrive -VM $vm | Where-Object { $_.Path -like '*-cidata.iso' } | ForEach-Object { $_.Path })
if ($Cluster) {
    Get-ClusterGroup | Where-Object { $_.GroupType -eq 'VirtualMachine' -and $_.Name -eq $vm.Name } |
        Remove-ClusterGroup -RemoveResources -Force
}
Remove-VM -VM $vm -Force
foreach ($file in ($files | Where-Object { $_ } | Sort-Object -Unique)) {
    Invoke-Command -ComputerName $vm.ComputerName -ScriptBlock {
        param($Path)
        Remove-Item -LiteralPath $Path -Force -ErrorAction SilentlyContinue
    } -ArgumentList $file
}
[ordered]@{ Existed = $true }
